"""Probes for orchestrators and Prometheus, shared by every process: imports nothing of toonbot's.

`probes` serves `/metrics`, `/healthz` and `/readyz`, on a page's own aiohttp
application or on a small server of its own (METRICS_PORT).
"""
