"""Operations: deploy and roll back style versions, TorchServe's management calls, retraining
jobs and their announcements, and the admin command line (`python -m ops`).

Uses the runtimes (`serving`), the archives (`styles`) and the database (`db`);
the bots' admin commands are its chat side.
"""
