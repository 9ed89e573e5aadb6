"""sitl package."""
