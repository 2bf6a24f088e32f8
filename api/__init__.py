"""The submission API (Flask): validates job specs with `schemas` and queues them by name.

It never imports torch, diffusers or `worker`. The endpoints of shared/contract/api.md land here.
"""
