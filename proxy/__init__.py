"""gitlab-dora-proxy: GitLab Ultimate's DORA metrics API for every GitLab tier."""

__all__ = ["USER_AGENT", "__version__"]

__version__ = "0.1.0"
USER_AGENT = f"gitlab-dora-proxy/{__version__}"
