"""``python -m zoobot``: the command line (also how Lightning's launcher restarts a command per rank)."""

from zoobot.cli import main

main()
