from evergreen.cli import entry

entry()
