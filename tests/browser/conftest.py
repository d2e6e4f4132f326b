"""The notebooks here are fixtures of ``tests/test_browser.py`` (driven in a real browser);
they must not be collected by nbval, which would run them without a front end."""

collect_ignore_glob = ["*.ipynb"]
