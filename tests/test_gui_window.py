"""The app's window opens offscreen and shows a bundled model's details, read off the main thread."""
from fewshot_gui.app import MainWindow


def test_window_shows_model_details(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.models.setCurrentText("photos")
    qtbot.waitUntil(lambda: '"backbone": "lite0"' in window.details.toPlainText(), timeout=60_000)
    assert window.statusBar().currentMessage() == "Model: photos"
