"""Moved: the torch datasets live in ``vae.counting`` (``synthcount`` never imports torch)."""

raise ImportError("synthcount.torch moved to vae.counting: from vae.counting import CountingDataset, "
                  "detection_collate (needs the [vae] extra: pip install 'synthcount[vae]')")
