"""Shared test code: fixtures that write benchmark files, tiny training configs, the
independent PyTorch reference, parameter helpers, the multi-device script."""
