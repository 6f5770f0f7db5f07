#include "fault_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What a write (or truncation) since the last fsync replaced, below the synced size. */
typedef struct Undo {
    sqlite3_int64 offset;
    int length;
    unsigned char *bytes;
    struct Undo *next; /* older records */
} Undo;

typedef struct FaultFile {
    sqlite3_file base; /* first, as SQLite requires; its pMethods is fault_methods */
    sqlite3_file *real;
    int tracked; /* a database, WAL or journal: its unsynced writes die with the power */
    sqlite3_int64 synced_size;
    sqlite3_int64 unsynced_bytes;
    Undo *undo;
    struct FaultFile *next_open;
    struct FaultFile *previous_open;
} FaultFile;

#define ROUND8(n) (((n) + 7) & ~(size_t)7)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;
static sqlite3_io_methods fault_methods;
static FaultFile *open_files;
static int sync_delay_ms;
static int disk_mode;
static long long sync_count;

enum { DISK_HEALTHY = 0, DISK_FULL = 1, DISK_IO_ERROR = 2 };

static sqlite3_file *real_of(sqlite3_file *file) { return ((FaultFile *)file)->real; }

/* Called with the lock held. */
static void forget_unsynced(FaultFile *file) {
    Undo *undo = file->undo;
    while (undo) {
        Undo *older = undo->next;
        free(undo->bytes);
        free(undo);
        undo = older;
    }
    file->undo = NULL;
    file->unsynced_bytes = 0;
}

/* Saves what [offset, offset + length) holds below the synced size. Called with the lock held. */
static int remember(FaultFile *file, sqlite3_int64 offset, sqlite3_int64 length) {
    sqlite3_int64 end = offset + length;
    if (end > file->synced_size) end = file->synced_size;
    if (offset >= end) return SQLITE_OK;
    Undo *undo = malloc(sizeof(Undo));
    if (!undo) return SQLITE_NOMEM;
    undo->offset = offset;
    undo->length = (int)(end - offset);
    undo->bytes = malloc((size_t)undo->length);
    if (!undo->bytes) {
        free(undo);
        return SQLITE_NOMEM;
    }
    int rc = file->real->pMethods->xRead(file->real, undo->bytes, undo->length, offset);
    if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) {
        free(undo->bytes);
        free(undo);
        return rc;
    }
    undo->next = file->undo;
    file->undo = undo;
    return SQLITE_OK;
}

/* Puts the file back as it was at its last fsync. Called with the lock held. */
static void revert(FaultFile *file) {
    for (Undo *undo = file->undo; undo; undo = undo->next) {
        file->real->pMethods->xWrite(file->real, undo->bytes, undo->length, undo->offset);
    }
    file->real->pMethods->xTruncate(file->real, file->synced_size);
    forget_unsynced(file);
}

/* MARK: File methods */

static int fault_close(sqlite3_file *file) {
    FaultFile *fault = (FaultFile *)file;
    pthread_mutex_lock(&lock);
    forget_unsynced(fault);
    if (fault->previous_open) fault->previous_open->next_open = fault->next_open;
    else open_files = fault->next_open;
    if (fault->next_open) fault->next_open->previous_open = fault->previous_open;
    pthread_mutex_unlock(&lock);
    return fault->real->pMethods->xClose(fault->real);
}

static int fault_read(sqlite3_file *file, void *buffer, int amount, sqlite3_int64 offset) {
    return real_of(file)->pMethods->xRead(real_of(file), buffer, amount, offset);
}

static int fault_write(sqlite3_file *file, const void *buffer, int amount, sqlite3_int64 offset) {
    FaultFile *fault = (FaultFile *)file;
    pthread_mutex_lock(&lock);
    int rc;
    if (disk_mode == DISK_FULL) {
        rc = SQLITE_FULL;
    } else if (disk_mode == DISK_IO_ERROR) {
        rc = SQLITE_IOERR_WRITE;
    } else {
        rc = fault->tracked ? remember(fault, offset, amount) : SQLITE_OK;
        if (rc == SQLITE_OK) rc = fault->real->pMethods->xWrite(fault->real, buffer, amount, offset);
        if (rc == SQLITE_OK && fault->tracked) fault->unsynced_bytes += amount;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

static int fault_truncate(sqlite3_file *file, sqlite3_int64 size) {
    FaultFile *fault = (FaultFile *)file;
    pthread_mutex_lock(&lock);
    int rc;
    if (disk_mode == DISK_IO_ERROR) {
        rc = SQLITE_IOERR_TRUNCATE;
    } else {
        rc = fault->tracked ? remember(fault, size, fault->synced_size - size) : SQLITE_OK;
        if (rc == SQLITE_OK) rc = fault->real->pMethods->xTruncate(fault->real, size);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

static int fault_sync(sqlite3_file *file, int flags) {
    FaultFile *fault = (FaultFile *)file;
    int delay = __atomic_load_n(&sync_delay_ms, __ATOMIC_RELAXED);
    if (delay > 0) {
        struct timespec pause = {delay / 1000, (long)(delay % 1000) * 1000000L};
        while (nanosleep(&pause, &pause) != 0) {}
    }
    pthread_mutex_lock(&lock);
    int rc;
    if (disk_mode == DISK_IO_ERROR) {
        /* After a failed fsync the kernel may have dropped the dirty pages: they are gone. */
        if (fault->tracked) revert(fault);
        rc = SQLITE_IOERR_FSYNC;
    } else {
        rc = fault->real->pMethods->xSync(fault->real, flags);
        if (rc == SQLITE_OK) {
            sync_count += 1;
            sqlite3_int64 size = 0;
            if (fault->real->pMethods->xFileSize(fault->real, &size) == SQLITE_OK) {
                forget_unsynced(fault);
                fault->synced_size = size;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

static int fault_file_size(sqlite3_file *file, sqlite3_int64 *size) {
    return real_of(file)->pMethods->xFileSize(real_of(file), size);
}

static int fault_lock(sqlite3_file *file, int level) { return real_of(file)->pMethods->xLock(real_of(file), level); }

static int fault_unlock(sqlite3_file *file, int level) { return real_of(file)->pMethods->xUnlock(real_of(file), level); }

static int fault_check_reserved_lock(sqlite3_file *file, int *result) {
    return real_of(file)->pMethods->xCheckReservedLock(real_of(file), result);
}

static int fault_file_control(sqlite3_file *file, int operation, void *argument) {
    return real_of(file)->pMethods->xFileControl(real_of(file), operation, argument);
}

static int fault_sector_size(sqlite3_file *file) { return real_of(file)->pMethods->xSectorSize(real_of(file)); }

static int fault_device_characteristics(sqlite3_file *file) {
    return real_of(file)->pMethods->xDeviceCharacteristics(real_of(file));
}

/* The WAL index lives in shared memory; a power loss loses it and SQLite rebuilds it. */
static int fault_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **address) {
    return real_of(file)->pMethods->xShmMap(real_of(file), page, size, extend, address);
}

static int fault_shm_lock(sqlite3_file *file, int offset, int count, int flags) {
    return real_of(file)->pMethods->xShmLock(real_of(file), offset, count, flags);
}

static void fault_shm_barrier(sqlite3_file *file) { real_of(file)->pMethods->xShmBarrier(real_of(file)); }

static int fault_shm_unmap(sqlite3_file *file, int delete) {
    return real_of(file)->pMethods->xShmUnmap(real_of(file), delete);
}

/* MARK: VFS methods */

static int fault_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
    (void)vfs;
    FaultFile *fault = (FaultFile *)file;
    memset(fault, 0, sizeof(FaultFile));
    fault->real = (sqlite3_file *)((char *)fault + ROUND8(sizeof(FaultFile)));
    int rc = real_vfs->xOpen(real_vfs, name, fault->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        fault->base.pMethods = NULL;
        return rc;
    }
    fault->base.pMethods = &fault_methods;
    fault->tracked = (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)) != 0;
    /* What a file holds when opened was there before this process: count it as synced. */
    fault->real->pMethods->xFileSize(fault->real, &fault->synced_size);
    pthread_mutex_lock(&lock);
    fault->next_open = open_files;
    if (open_files) open_files->previous_open = fault;
    open_files = fault;
    pthread_mutex_unlock(&lock);
    return SQLITE_OK;
}

static int fault_delete(sqlite3_vfs *vfs, const char *name, int sync_directory) {
    (void)vfs;
    return real_vfs->xDelete(real_vfs, name, sync_directory);
}

static int fault_access(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, result);
}

static int fault_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *output) {
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, size, output);
}

static void *fault_dl_open(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void fault_dl_error(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    real_vfs->xDlError(real_vfs, size, message);
}

static void (*fault_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, handle, symbol);
}

static void fault_dl_close(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    real_vfs->xDlClose(real_vfs, handle);
}

static int fault_randomness(sqlite3_vfs *vfs, int size, char *output) {
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, size, output);
}

static int fault_sleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return real_vfs->xSleep(real_vfs, microseconds);
}

static int fault_current_time(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, now);
}

static int fault_get_last_error(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, size, message) : 0;
}

static int fault_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, now);
}

/* MARK: Control */

int fulcrum_fault_vfs_install(void) {
    pthread_mutex_lock(&lock);
    if (real_vfs) {
        pthread_mutex_unlock(&lock);
        return SQLITE_OK;
    }
    int rc = sqlite3_initialize();
    sqlite3_vfs *base = rc == SQLITE_OK ? sqlite3_vfs_find(NULL) : NULL;
    if (!base) {
        pthread_mutex_unlock(&lock);
        return rc == SQLITE_OK ? SQLITE_ERROR : rc;
    }
    real_vfs = base;

    fault_methods = (sqlite3_io_methods){
        .iVersion = 2, /* no memory-mapped I/O: every write goes through fault_write */
        .xClose = fault_close,
        .xRead = fault_read,
        .xWrite = fault_write,
        .xTruncate = fault_truncate,
        .xSync = fault_sync,
        .xFileSize = fault_file_size,
        .xLock = fault_lock,
        .xUnlock = fault_unlock,
        .xCheckReservedLock = fault_check_reserved_lock,
        .xFileControl = fault_file_control,
        .xSectorSize = fault_sector_size,
        .xDeviceCharacteristics = fault_device_characteristics,
        .xShmMap = fault_shm_map,
        .xShmLock = fault_shm_lock,
        .xShmBarrier = fault_shm_barrier,
        .xShmUnmap = fault_shm_unmap,
    };
    fault_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)(ROUND8(sizeof(FaultFile)) + (size_t)base->szOsFile),
        .mxPathname = base->mxPathname,
        .zName = "fulcrum-fault",
        .xOpen = fault_open,
        .xDelete = fault_delete,
        .xAccess = fault_access,
        .xFullPathname = fault_full_pathname,
        .xDlOpen = fault_dl_open,
        .xDlError = fault_dl_error,
        .xDlSym = fault_dl_sym,
        .xDlClose = fault_dl_close,
        .xRandomness = fault_randomness,
        .xSleep = fault_sleep,
        .xCurrentTime = fault_current_time,
        .xGetLastError = fault_get_last_error,
        .xCurrentTimeInt64 = fault_current_time_int64,
    };
    rc = sqlite3_vfs_register(&fault_vfs, 1);
    if (rc != SQLITE_OK) real_vfs = NULL;
    pthread_mutex_unlock(&lock);
    return rc;
}

void fulcrum_fault_vfs_set_sync_delay_ms(int milliseconds) {
    __atomic_store_n(&sync_delay_ms, milliseconds < 0 ? 0 : milliseconds, __ATOMIC_RELAXED);
}

void fulcrum_fault_vfs_set_disk_mode(int mode) {
    pthread_mutex_lock(&lock);
    disk_mode = mode;
    pthread_mutex_unlock(&lock);
}

long long fulcrum_fault_vfs_unsynced_bytes(void) {
    pthread_mutex_lock(&lock);
    long long total = 0;
    for (FaultFile *file = open_files; file; file = file->next_open) total += file->unsynced_bytes;
    pthread_mutex_unlock(&lock);
    return total;
}

long long fulcrum_fault_vfs_syncs(void) {
    pthread_mutex_lock(&lock);
    long long count = sync_count;
    pthread_mutex_unlock(&lock);
    return count;
}

void fulcrum_fault_vfs_power_loss(int status) {
    /* Taken and never given back: no write or fsync can slip in between the undo and the end. */
    pthread_mutex_lock(&lock);
    for (FaultFile *file = open_files; file; file = file->next_open) {
        if (file->tracked) revert(file);
    }
    _exit(status);
}
