"""A fake GitLab (real aiohttp server) for the tests and for `dora-proxy demo`."""
