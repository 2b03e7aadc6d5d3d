"""Shared test helpers: real binaries on loopback, a controllable target, a Slack catcher."""
