"""placeholder: commands arrive with their issue."""
COMMANDS = []
