#ifndef TALLY_CSQLITESETTINGS_H
#define TALLY_CSQLITESETTINGS_H

/// Turns off SQLite's memory statistics for the whole process. With them on (Debian's default),
/// every allocation SQLite makes takes and releases a process-wide mutex to count bytes; Tally
/// reads no statistic. `sqlite3_config` is variadic, which Swift cannot call, hence this shim.
///
/// Takes effect only before SQLite is first initialized (before the first connection opens):
/// returns SQLITE_OK (0) then, SQLITE_MISUSE afterwards, when the setting stays as it was.
int tally_sqlite_disable_memory_statistics(void);

#endif
