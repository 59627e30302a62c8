extension Gateway {
    /// READY=1 and the watchdog pings, both sent from the loop: READY once it runs (the
    /// listener is up, clients can connect), and the pings by a loop timer, so a stuck loop
    /// stops them and the manager notices.
    func startServiceNotifications() {
        guard let notifier = config.notifier, notifier.isActive else { return }
        let path = config.socketPath
        reactor.submit { [self] in
            notifier.ready(status: "listening on \(path)")
            if let interval = notifier.watchdogIntervalMS {
                pingWatchdog(every: interval, notifier)
            }
        }
    }

    private func pingWatchdog(every milliseconds: Int, _ notifier: ServiceNotifier) {
        notifier.watchdogPing()
        reactor.schedule(in: milliseconds) { [weak self] in
            self?.pingWatchdog(every: milliseconds, notifier)
        }
    }
}
