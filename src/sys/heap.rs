//! Giving freed heap memory back to the system.

/// Returns the free pages of the heap to the system (glibc's
/// `malloc_trim(0)`): after many small allocations are freed (the nodes
/// the kernel forgot), glibc keeps them for reuse unless they lie at the
/// top of the heap, so the daemon's resident memory would not go down
/// (measured: 162 MiB resident after dropping 1,000,000 nodes, 22 MiB
/// after a trim). A no-op elsewhere.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's
    // own state, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
