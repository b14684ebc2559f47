"""DJANGO_SETTINGS_MODULE=tests.embed.django_pos.settings"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["tests.embed.django_pos.apps.PosConfig"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "tests.embed.django_pos.urls"
DATABASES: dict[str, dict[str, str]] = {}  # the POS's tables are SQLModel's (tests/embed/pos.py)
USE_TZ = True
