"""firmware_profiles."""
