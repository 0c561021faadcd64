# The permission-only KafkaTopic model: managed=False, so no table is created.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kafka_bridge", "0004_outbox_quarantine"),
    ]

    operations = [
        migrations.CreateModel(
            name="KafkaTopic",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "permissions": [("browse_topics", "Can browse topic records")],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
