"""The project's settings (``DJANGO_SETTINGS_MODULE=tests.otel.django_project.settings``)."""

DEBUG = False
ALLOWED_HOSTS = ["*"]
SECRET_KEY = "auto"
ROOT_URLCONF = "tests.otel.django_project.urls"
# an app with models, and a middleware whose module imports one: importing it before the apps are loaded raises
# AppRegistryNotReady
INSTALLED_APPS = ["django.contrib.contenttypes"]
MIDDLEWARE = ["tests.otel.django_project.middleware.ModelsMiddleware", "django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
