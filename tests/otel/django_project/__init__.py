"""A Django project laid out as ``django-admin startproject`` lays one out (settings, URLs, ``wsgi.py``), for
tests/otel/uninstrumented_wsgi_apps.py: nothing here imports aiwatch."""
