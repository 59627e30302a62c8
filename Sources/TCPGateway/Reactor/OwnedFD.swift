import CNetShim

/// A descriptor with exactly one owner. Moving it hands it over, dropping it closes it, and
/// `release()` gives the number away (to SCM_RIGHTS, say) without closing: no path can close a
/// descriptor twice or forget one, because the compiler tracks the single copy.
struct OwnedFD: ~Copyable {
    let raw: Int32

    /// Takes ownership of `raw`, which nobody else may close from now on.
    init(adopting raw: Int32) {
        self.raw = raw
    }

    /// Gives up ownership without closing: the caller now answers for the number.
    consuming func release() -> Int32 {
        let raw = self.raw
        discard self
        return raw
    }

    /// Closes now (dropping the value does the same; this says so where it matters).
    consuming func close() {
        _ = tcpgw_close(raw)
        discard self
    }

    deinit {
        _ = tcpgw_close(raw)
    }
}

/// Descriptors that arrived with a client's request line (SCM_RIGHTS): owned until an operation
/// takes one; whatever is left closes with the batch.
struct PassedDescriptors: ~Copyable {
    private var fds: [Int32]

    init(adopting fds: [Int32]) {
        self.fds = fds.filter { $0 >= 0 }
    }

    var count: Int { fds.count }

    /// The only descriptor, if exactly one came; the rest stay owned here (and close with it).
    mutating func takeOnly() -> OwnedFD? {
        guard fds.count == 1 else { return nil }
        return OwnedFD(adopting: fds.removeLast())
    }

    /// Moves every descriptor out (to a call that takes them).
    mutating func takeAll() -> PassedDescriptors {
        let all = fds
        fds = []
        return PassedDescriptors(adopting: all)
    }

    deinit {
        for fd in fds { _ = tcpgw_close(fd) }
    }
}
