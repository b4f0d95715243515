"""``python -m kvae``: the kvae command line."""

from kvae.cli import main

if __name__ == "__main__":
    main(prog_name="kvae")
