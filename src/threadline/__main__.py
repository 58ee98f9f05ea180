from threadline.cli import app

app()
