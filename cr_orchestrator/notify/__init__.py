"""Notifications: webhooks and mail on failover, switchover, hold-with-action-needed, a
failed playbook and a replica behind (``cr_notify`` in the inventory)."""
