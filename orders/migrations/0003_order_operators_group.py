"""The `order-operators` group: may list, read, create and confirm orders."""

from django.db import migrations

GROUP = "order-operators"
# (codename, name) as Django's post_migrate would name them.
PERMISSIONS = [
    ("view_order", "Can view order"),
    ("add_order", "Can add order"),
    ("confirm_order", "Can confirm order"),
]


def group_create(apps, schema_editor):
    # Django creates content types and permissions in post_migrate, after every migration has
    # run: on a fresh database they do not exist yet, so they are made here. post_migrate only
    # adds the ones missing, so nothing is created twice.
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")

    order_type, _ = ContentType.objects.using(db).get_or_create(app_label="orders", model="order")
    permissions = [
        Permission.objects.using(db).get_or_create(content_type=order_type, codename=codename, defaults={"name": name})[
            0
        ]
        for codename, name in PERMISSIONS
    ]
    group, _ = Group.objects.using(db).get_or_create(name=GROUP)
    group.permissions.add(*permissions)


def group_delete(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_order_confirm_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(group_create, group_delete),
    ]
