//! Owns the heap's footprint: how many allocator arenas the process may use, and giving freed
//! heap memory back to the operating system after a burst of work (a poll).
//!
//! glibc's allocator keeps memory a program freed in its arenas for reuse, one arena per thread
//! that allocated, so after a poll of a million bookings the daemon would stay at the poll's
//! peak while it idles. `malloc_trim(0)` returns those free pages; it touches no live
//! allocation. Other C libraries (musl) return memory on their own, so this is a no-op there.

/// Returns free heap memory to the operating system (glibc); a no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only hands free pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Arenas glibc may create when the operator did not choose (`MALLOC_ARENA_MAX`).
pub const ARENAS: i32 = 2;

/// Caps glibc's allocator at [`ARENAS`] arenas, unless `MALLOC_ARENA_MAX` is set; call it
/// before any thread starts. glibc's default (eight per core) gives each thread that allocates
/// its own arena and its own leftovers; on a sidecar's one or two cores that costs memory and
/// buys nothing (the daemon idled at 43 MB with the default and 33 MB with two, polling 100,000
/// bookings every 3 s). A no-op with other C libraries.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; M_ARENA_MAX takes any positive
        // count, and no other thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
