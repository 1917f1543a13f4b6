"""Click sub-commands, each in its own module so that the root group can load them lazily."""
