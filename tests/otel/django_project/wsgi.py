"""The project's ``wsgi.py``, as ``startproject`` writes it."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.otel.django_project.settings")

application = get_wsgi_application()
