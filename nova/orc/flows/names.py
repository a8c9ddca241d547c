"""Atom names and store keys of every flow: the one place they are spelled.

Store keys marked *transient* are injected with ``transient=True`` and never
reach the journal (secrets, live objects); all others are persisted and must
be JSON-serialisable primitives (Nova objects as ``obj_to_primitive()``).
"""

# ---------------------------------------------------------------- store keys
CONTEXT = 'context'                    # transient: nova RequestContext
ADMIN_PASSWORD = 'admin_password'      # transient: secret
INJECTED_FILES = 'injected_files'      # transient: may hold secrets
#: sealed with the secrets, never an input of a task: the user's token and
#: service catalog, for a conductor resuming the flow to act as the user
USER_AUTH = 'user_auth'
FLOW_ID = 'flow_id'                    # flow detail uuid (owner of locks)
INSTANCE_UUID = 'instance_uuid'
REQUEST_SPEC = 'request_spec'          # RequestSpec primitive
IMAGE = 'image'                        # image metadata dict
REQUESTED_NETWORKS = 'requested_networks'  # NetworkRequestList primitive
BLOCK_DEVICE_MAPPING = 'block_device_mapping'  # BDM list primitive
TAGS = 'tags'                          # TagList primitive or None
NUM_INSTANCES = 'num_instances'        # instances in the API request
PRESELECTED_HOSTS = 'preselected_hosts'  # Selection primitives or None
LOCK_RESOURCES = 'lock_resources'      # [[kind, id], ...]
INSTANCE_UUIDS = 'instance_uuids'      # boot_group: the request's instances
REQUEST_SPECS = 'request_specs'        # boot_group: RequestSpec primitives
DISPLAY_NAMES = 'display_names'        # boot_group: server names

# ------------------------------------------------------------- atom results
HOST_LIST = 'host_list'                # schedule: Selection primitives
CELL_UUID = 'cell_uuid'                # create_record: cell of the instance
SELECTION = 'selection'                # host_retry: the Selection tried now
SPEC_WITH_MAPPING = 'spec_with_mapping'  # claim_allocation: RequestSpec
CLAIM = 'claim'                        # claim_host: {'host', 'node'}
NETWORK_INFO = 'network_info'          # networks: network_info JSON
BLOCK_DEVICES = 'block_devices'        # block_devices: attached volume ids
SPAWNED = 'spawned'                    # spawn: {'host', 'node'}
STOCK_BUILD = 'stock_build'            # build_on_stock_compute: {'host',
                                       # 'node', 'vm_state'}
HOST_LISTS = 'host_lists'              # schedule_group: one list a member

# --------------------------------------------------------------- atom names
BURY_ON_FAILURE = 'bury_on_failure'
LOCK = 'lock'
SCHEDULE = 'schedule'
CREATE_RECORD = 'create_record'
HOST_RETRY = 'host_retry'
CLAIM_ALLOCATION = 'claim_allocation'
CLAIM_HOST = 'claim_host'
NETWORKS = 'networks'
BLOCK_DEVICES_TASK = 'block_devices'
SPAWN = 'spawn'
BUILD_ON_STOCK_COMPUTE = 'build_on_stock_compute'
FINALIZE = 'finalize'
BURY_GROUP_ON_FAILURE = 'bury_group_on_failure'
SCHEDULE_GROUP = 'schedule_group'
POST_BOOTS = 'post_boots'

# ----------------------------------------------------------------- flows
BOOT = 'boot'
BOOT_GROUP = 'boot_group'

#: prefix of the instance-action events recorded for every task
EVENT_PREFIX = 'orc_'
