"""The files of the storage directory (STORAGE_DIR), one round of one central:

- ``bets.csv``       the bets, one RFC 4180 line each: ``agency,first_name,last_name,document,birthdate,number``.
- ``journal.log``    what is stored: a checkpoint, then a record per change (journal.py).
- ``storage.lock``   the append lock (``flock``; locks.AppendLock): held around every change and every
                     fold of the journal, never across an fsync of bets.
- ``instance.lock``  held by one central for its whole life (``flock``, with its pid inside).
- ``winners.csv``    the draw's result (draw.py); its existence is the fact "the round is drawn".
- ``announced``      empty; exists once the draw has been announced in the log (barrier.py).
"""

BETS_FILE = "bets.csv"
JOURNAL_FILE = "journal.log"
LOCK_FILE = "storage.lock"
INSTANCE_LOCK_FILE = "instance.lock"
WINNERS_FILE = "winners.csv"
ANNOUNCED_FILE = "announced"
