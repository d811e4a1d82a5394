"""Notification channels (企业微信, 钉钉, email, SMS, webhook): one module per channel behind the
small interface in `base`."""
