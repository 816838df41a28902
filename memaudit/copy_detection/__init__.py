"""Copy detection: nearest training images of generations, and the copy threshold."""
