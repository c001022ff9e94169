"""Request and response shapes of the OpenAI API subset Sluice serves (chat, embeddings, models)."""
