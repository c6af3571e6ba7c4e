"""Command-line interface: a thin click layer over the synthcount and vae Python APIs."""
