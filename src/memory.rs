//! Owns giving freed heap memory back to the operating system after a burst of work (a poll).
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
