"""Reliability tools run beside the test suite: the protocol fuzzer (``reliability.fuzz``);
``autobahn/`` holds scripts run by path."""
