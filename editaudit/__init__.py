"""editaudit: edit image classifiers after the fact and audit the edit's robustness before deployment."""

__version__ = "0.1.0"
