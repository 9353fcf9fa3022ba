"""conftest.py: tell the plugin's fixtures which app to test."""

import pytest
from chat.app import app

from trio_bocaws import App


@pytest.fixture
def bocaws_app() -> App:
    return app
