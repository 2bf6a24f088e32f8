"""The submission API (Flask): validates job specs with `schemas` and queues them by name.

It never imports torch, diffusers or `worker`. The endpoints of docs/rest-api.md land here.
"""
