"""The API's deployment-wide parts: the error handler, the request parser, the login throttle and
the views of the deployment (health, metrics, contract files)."""
