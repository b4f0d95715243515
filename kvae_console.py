"""The ``kvae`` console script. It says, before ``kvae`` is imported, that this process is
the command line: ``import kvae`` then leaves TensorFlow alone (the commands import it when
they run), so ``kvae --help`` stays fast. Everywhere else ``import kvae`` registers kvae's
Keras objects at once, so ``keras.models.load_model`` finds them."""


def main():
    # kvae/__init__.py looks for this module in sys.modules: it is imported first.
    from kvae.cli import main as cli_main

    return cli_main(prog_name="kvae")
