/*
 * The shop's part in the master (a master hook, src/modules.c): its SQLite
 * file is created and migrated once, before any worker starts.
 */
#ifndef COHORT_SHOP_PREPARE_H
#define COHORT_SHOP_PREPARE_H

#include "core/config.h"

/* Nothing unless app is "shop". Creates and migrates store.path and hands
 * the file and its folder to the workers' user; 0, or -1 after logging why
 * (a bad store.path stops the start). */
int shop_prepare_store(const struct cfg *c);

#endif
