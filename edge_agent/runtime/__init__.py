"""Runtimes behind one Protocol (`base.Runtime`): Podman (containers) and plain processes (Termux)."""
