"""Team mode for real: PostgreSQL, an ``mlflow server`` on it, object storage, several users at once."""
