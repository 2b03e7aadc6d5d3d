"""Where the outputs go: base (the interface), pull (/metrics), remote_write (+ prompb)."""
