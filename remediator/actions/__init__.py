"""Action types, one module per `type`: exec, systemd_restart, http, notify."""
