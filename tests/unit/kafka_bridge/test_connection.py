"""The contract's security variables reach every Kafka client through `connection_config()`."""

from kafka_bridge.connection import connection_config


def test_plaintext_carries_no_credentials(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["a:9092", "b:9092"]
    settings.KAFKA_SECURITY_PROTOCOL = "PLAINTEXT"
    settings.KAFKA_SASL_USERNAME = "ignored"
    assert connection_config() == {
        "bootstrap_servers": ["a:9092", "b:9092"],
        "security_protocol": "PLAINTEXT",
        "reconnect_backoff_max_ms": 1000,
    }


def test_sasl_ssl_carries_mechanism_credentials_and_ca(settings):
    settings.KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    settings.KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
    settings.KAFKA_SASL_USERNAME = "svc"
    settings.KAFKA_SASL_PASSWORD = "s3cret"
    settings.KAFKA_SSL_CAFILE = "/etc/ssl/ca.pem"
    config = connection_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "s3cret",
    )
    assert config["ssl_cafile"] == "/etc/ssl/ca.pem"


def test_sasl_plaintext_defaults_to_plain_and_sends_no_ca(settings):
    settings.KAFKA_SECURITY_PROTOCOL = "SASL_PLAINTEXT"
    settings.KAFKA_SASL_MECHANISM = None
    settings.KAFKA_SSL_CAFILE = "/etc/ssl/ca.pem"
    config = connection_config()
    assert config["sasl_mechanism"] == "PLAIN"
    assert "ssl_cafile" not in config
