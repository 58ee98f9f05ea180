"""One package per vendor API shape. A dialect translates wire ⇄ core and nothing else; no
dialect imports another."""
