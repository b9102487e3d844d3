// The umbrella header: everything public in quell.
#pragma once

#include "quell/cancellation.hpp"
#include "quell/channel.hpp"
#include "quell/clock.hpp"
#include "quell/errors.hpp"
#include "quell/event.hpp"
#include "quell/executor.hpp"
#include "quell/join.hpp"
#include "quell/leaves.hpp"
#include "quell/mutex.hpp"
#include "quell/net.hpp"
#include "quell/on_cancel.hpp"
#include "quell/race.hpp"
#include "quell/semaphore.hpp"
#include "quell/task.hpp"
#include "quell/time.hpp"
