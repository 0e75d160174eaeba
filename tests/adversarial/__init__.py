"""The attack corpus (a package only so that its conftest.py is imported as adversarial.conftest,
never as a second top-level ``conftest`` module)."""
