"""``python -m llmtune`` (also what ``accelerate launch -m llmtune`` runs)."""

from llmtune.cli.app import main

if __name__ == "__main__":
    main()
