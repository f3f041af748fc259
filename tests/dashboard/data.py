"""Rows the dashboard tests start from, made through the service functions."""

from cosmos_models import DatabaseConnection, PromptCreate, create_prompt


def add_prompt(
    db: DatabaseConnection, model_type: str = "transfer", prompt_text: str = "a city"
) -> str:
    """Insert a prompt without inputs or parameters; return its id."""
    prompt = PromptCreate(model_type=model_type, prompt_text=prompt_text, inputs={}, parameters={})
    return create_prompt(db, prompt).id
