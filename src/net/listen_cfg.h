/* The listeners' keys ("listen", listen[].*), registered with the config. */
#ifndef COHORT_NET_LISTEN_CFG_H
#define COHORT_NET_LISTEN_CFG_H

int listen_cfg_register(void);

#endif
