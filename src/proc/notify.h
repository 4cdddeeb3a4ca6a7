/*
 * systemd readiness notification (sd_notify protocol): a datagram to the
 * Unix socket named by $NOTIFY_SOCKET ("@name" for the abstract namespace).
 * Does nothing when the variable is unset.
 */
#ifndef COHORT_NOTIFY_H
#define COHORT_NOTIFY_H

/* Sends e.g. "READY=1" or "STOPPING=1"; returns 0 or -errno. */
int notify_send(const char *state);

#endif
