"""The GraphQL schema the simulator validates against, written from Shopify's Admin API
reference for the types the inventory push, drift repair, order settling and bulk resync
use. It is a subset of the real schema (fields we never select are left out), never a
superset: a document the real API rejects for an unknown field, argument, type or
directive is rejected here too. One schema per set of version switches
(:class:`~adapters.shopify.simulator.versions.Features`)."""

from __future__ import annotations

from functools import lru_cache

from graphql import GraphQLSchema, build_schema

from . import fulfillment
from .payments import SDL as PAYMENTS_SDL
from .versions import Features

_SET_ERROR_CODES = [
    "CHANGE_FROM_QUANTITY_STALE",
    "COMPARE_QUANTITY_REQUIRED",
    "COMPARE_QUANTITY_STALE",
    "INVALID_INVENTORY_ITEM",
    "INVALID_LOCATION",
    "INVALID_NAME",
    "INVALID_QUANTITY_NEGATIVE",
    "INVALID_QUANTITY_TOO_HIGH",
    "INVALID_QUANTITY_TOO_LOW",
    "INVALID_REASON",
    "INVALID_REFERENCE_DOCUMENT",
    "ITEM_NOT_STOCKED_AT_LOCATION",
    "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
    "NON_MUTABLE_INVENTORY_ITEM",
]
_ADJUST_ERROR_CODES = [
    "CHANGE_FROM_QUANTITY_STALE",
    "INVALID_INVENTORY_ITEM",
    "INVALID_LOCATION",
    "INVALID_QUANTITY_NAME",
    "INVALID_QUANTITY_NEGATIVE",
    "INVALID_QUANTITY_TOO_HIGH",
    "INVALID_QUANTITY_TOO_LOW",
    "INVALID_REASON",
    "INVALID_REFERENCE_DOCUMENT",
    "ITEM_NOT_STOCKED_AT_LOCATION",
    "NON_MUTABLE_INVENTORY_ITEM",
]


def error_codes(features: Features, adjust: bool = False) -> list[str]:
    codes = list(_ADJUST_ERROR_CODES if adjust else _SET_ERROR_CODES)
    if not features.change_from:
        codes.remove("CHANGE_FROM_QUANTITY_STALE")
    if features.idempotent_directive:
        codes += ["IDEMPOTENCY_CONCURRENT_REQUEST", "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"]
    if features.previous_attempt_failed:
        codes.append("IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED")
    if features.change_from_required:
        codes.append("CHANGE_FROM_QUANTITY_REQUIRED")  # sim choice, see versions.py
    return sorted(codes)


def sdl(features: Features) -> str:
    """The SDL text for one version's switches."""
    f = features
    compare_input = (
        '  compareQuantity: Int @deprecated(reason: "Use changeFromQuantity instead.")\n' if f.compare_quantity and f.change_from
        else "  compareQuantity: Int\n" if f.compare_quantity
        else ""
    )
    ignore_compare = "  ignoreCompareQuantity: Boolean = false\n" if f.compare_quantity else ""
    change_from = "  changeFromQuantity: Int\n" if f.change_from else ""
    directive = (
        '"""Makes a mutation idempotent: the same key replays the first result."""\n'
        "directive @idempotent(key: String!) on FIELD\n"
        if f.idempotent_directive
        else ""
    )
    group_objects_mutation = "" if f.concurrent_bulk else ", groupObjects: Boolean = true"
    group_objects_query = ", groupObjects: Boolean = false" if f.concurrent_bulk else ""
    bulk_by_id = "  bulkOperation(id: ID!): BulkOperation\n" if f.concurrent_bulk else ""
    set_codes = "\n  ".join(error_codes(f))
    adjust_codes = "\n  ".join(error_codes(f, adjust=True))
    from .refunds import SDL as refunds_sdl  # noqa: PLC0415 - refunds and returns extend Query and Mutation

    return refunds_sdl + f'''
{directive}
scalar DateTime
scalar URL
scalar UnsignedInt64
scalar Decimal

interface Node {{ id: ID! }}

type PageInfo {{
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}}

type Location implements Node {{
  id: ID!
  name: String!
  isActive: Boolean!
  inventoryLevel(inventoryItemId: ID!): InventoryLevel
  inventoryLevels(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String): InventoryLevelConnection!
}}
type LocationEdge {{ cursor: String! node: Location! }}
type LocationConnection {{ edges: [LocationEdge!]! nodes: [Location!]! pageInfo: PageInfo! }}

enum ProductVariantInventoryPolicy {{ DENY CONTINUE }}

type ProductVariant implements Node {{
  id: ID!
  sku: String
  inventoryPolicy: ProductVariantInventoryPolicy!
  inventoryItem: InventoryItem!
}}

type InventoryItem implements Node {{
  id: ID!
  sku: String
  tracked: Boolean!
  createdAt: DateTime!
  updatedAt: DateTime!
  variant: ProductVariant!
  inventoryLevel(locationId: ID!): InventoryLevel
  inventoryLevels(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String): InventoryLevelConnection!
}}
type InventoryItemEdge {{ cursor: String! node: InventoryItem! }}
type InventoryItemConnection {{ edges: [InventoryItemEdge!]! nodes: [InventoryItem!]! pageInfo: PageInfo! }}

type InventoryQuantity {{
  id: ID!
  name: String!
  quantity: Int!
  updatedAt: DateTime
}}

type InventoryLevel implements Node {{
  id: ID!
  item: InventoryItem!
  location: Location!
  quantities(names: [String!]!): [InventoryQuantity!]!
  createdAt: DateTime!
  updatedAt: DateTime!
}}
type InventoryLevelEdge {{ cursor: String! node: InventoryLevel! }}
type InventoryLevelConnection {{ edges: [InventoryLevelEdge!]! nodes: [InventoryLevel!]! pageInfo: PageInfo! }}

type InventoryChange {{
  name: String!
  delta: Int!
  quantityAfterChange: Int
  item: InventoryItem
  location: Location
  ledgerDocumentUri: URL
}}

type InventoryAdjustmentGroup implements Node {{
  id: ID!
  createdAt: DateTime!
  reason: String!
  referenceDocumentUri: URL
  changes(inventoryItemIds: [ID!], locationIds: [ID!], quantityNames: [String!]): [InventoryChange!]!
}}

input InventoryQuantityInput {{
  inventoryItemId: ID!
  locationId: ID!
  quantity: Int!
{compare_input}{change_from}}}

input InventorySetQuantitiesInput {{
  name: String!
  reason: String!
  referenceDocumentUri: URL
  quantities: [InventoryQuantityInput!]!
{ignore_compare}}}

enum InventorySetQuantitiesUserErrorCode {{
  {set_codes}
}}

type InventorySetQuantitiesUserError {{
  code: InventorySetQuantitiesUserErrorCode
  field: [String!]
  message: String!
}}

type InventorySetQuantitiesPayload {{
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventorySetQuantitiesUserError!]!
}}

input InventoryChangeInput {{
  inventoryItemId: ID!
  locationId: ID!
  delta: Int!
  ledgerDocumentUri: URL
{change_from}}}

input InventoryAdjustQuantitiesInput {{
  name: String!
  reason: String!
  referenceDocumentUri: URL
  changes: [InventoryChangeInput!]!
}}

enum InventoryAdjustQuantitiesUserErrorCode {{
  {adjust_codes}
}}

type InventoryAdjustQuantitiesUserError {{
  code: InventoryAdjustQuantitiesUserErrorCode
  field: [String!]
  message: String!
}}

type InventoryAdjustQuantitiesPayload {{
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventoryAdjustQuantitiesUserError!]!
}}

type LineItem implements Node {{
  id: ID!
  sku: String
  name: String!
  quantity: Int!
  currentQuantity: Int!
  unfulfilledQuantity: Int!
  variant: ProductVariant
}}
type LineItemEdge {{ cursor: String! node: LineItem! }}
type LineItemConnection {{ edges: [LineItemEdge!]! nodes: [LineItem!]! pageInfo: PageInfo! }}

type FulfillmentOrderAssignedLocation {{
  location: Location
  name: String!
}}

enum FulfillmentOrderStatus {{ OPEN IN_PROGRESS CANCELLED INCOMPLETE CLOSED SCHEDULED ON_HOLD }}

type FulfillmentOrderLineItem implements Node {{
  id: ID!
  lineItem: LineItem!
  totalQuantity: Int!
  remainingQuantity: Int!
}}
type FulfillmentOrderLineItemEdge {{ cursor: String! node: FulfillmentOrderLineItem! }}
type FulfillmentOrderLineItemConnection {{ edges: [FulfillmentOrderLineItemEdge!]! nodes: [FulfillmentOrderLineItem!]! pageInfo: PageInfo! }}

type FulfillmentOrder implements Node {{
  id: ID!
  status: FulfillmentOrderStatus!
  assignedLocation: FulfillmentOrderAssignedLocation!
  lineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): FulfillmentOrderLineItemConnection!
}}
type FulfillmentOrderEdge {{ cursor: String! node: FulfillmentOrder! }}
type FulfillmentOrderConnection {{ edges: [FulfillmentOrderEdge!]! nodes: [FulfillmentOrder!]! pageInfo: PageInfo! }}

enum OrderCancelReason {{ CUSTOMER DECLINED FRAUD INVENTORY STAFF OTHER }}

type Order implements Node {{
  id: ID!
  name: String!
  createdAt: DateTime!
  updatedAt: DateTime!
  cancelledAt: DateTime
  cancelReason: OrderCancelReason
  sourceName: String
  test: Boolean!
  retailLocation: Location
  lineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): LineItemConnection!
  fulfillmentOrders(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, displayable: Boolean = false): FulfillmentOrderConnection!
{fulfillment.ORDER_FIELDS}}}
type OrderEdge {{ cursor: String! node: Order! }}
type OrderConnection {{ edges: [OrderEdge!]! nodes: [Order!]! pageInfo: PageInfo! }}

enum OrderSortKeys {{ CREATED_AT ID UPDATED_AT PROCESSED_AT }}

enum BulkOperationStatus {{ CREATED RUNNING COMPLETED CANCELING CANCELED FAILED EXPIRED }}
enum BulkOperationType {{ QUERY MUTATION }}
enum BulkOperationErrorCode {{ ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }}

type BulkOperation implements Node {{
  id: ID!
  status: BulkOperationStatus!
  type: BulkOperationType!
  errorCode: BulkOperationErrorCode
  createdAt: DateTime!
  completedAt: DateTime
  objectCount: UnsignedInt64!
  rootObjectCount: UnsignedInt64!
  fileSize: UnsignedInt64
  url: URL
  partialDataUrl: URL
  query: String!
}}

enum BulkOperationUserErrorCode {{ INVALID OPERATION_IN_PROGRESS LIMIT_REACHED NO_SUCH_FILE }}
type BulkOperationUserError {{ code: BulkOperationUserErrorCode field: [String!] message: String! }}
type UserError {{ field: [String!] message: String! }}

type BulkOperationRunQueryPayload {{ bulkOperation: BulkOperation userErrors: [BulkOperationUserError!]! }}
type BulkOperationRunMutationPayload {{ bulkOperation: BulkOperation userErrors: [BulkOperationUserError!]! }}
type BulkOperationCancelPayload {{ bulkOperation: BulkOperation userErrors: [BulkOperationUserError!]! }}

enum StagedUploadTargetGenerateUploadResource {{ BULK_MUTATION_VARIABLES IMAGE FILE VIDEO MODEL_3D URL_REDIRECT_IMPORT COLLECTION_IMAGE PRODUCT_IMAGE SHOP_IMAGE }}
enum StagedUploadHttpMethodType {{ POST PUT }}

input StagedUploadInput {{
  resource: StagedUploadTargetGenerateUploadResource!
  filename: String!
  mimeType: String!
  httpMethod: StagedUploadHttpMethodType = PUT
  fileSize: UnsignedInt64
}}

type StagedUploadParameter {{ name: String! value: String! }}
type StagedMediaUploadTarget {{ url: URL resourceUrl: URL parameters: [StagedUploadParameter!]! }}
type StagedUploadsCreatePayload {{ stagedTargets: [StagedMediaUploadTarget!] userErrors: [UserError!]! }}

{PAYMENTS_SDL}
"""Real, but not simulated: selecting it is refused with UNSUPPORTED_OPERATION."""
type Shop {{ name: String! myshopifyDomain: String! }}

type Query {{
  shop: Shop!
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  inventoryItem(id: ID!): InventoryItem
  inventoryItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String): InventoryItemConnection!
  inventoryLevel(id: ID!): InventoryLevel
  location(id: ID): Location
  locations(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String, includeInactive: Boolean = false, includeLegacy: Boolean = false): LocationConnection!
  order(id: ID!): Order
  orders(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String, sortKey: OrderSortKeys = ID): OrderConnection!
  currentBulkOperation(type: BulkOperationType = QUERY): BulkOperation
  shopifyPaymentsAccount: ShopifyPaymentsAccount
{bulk_by_id}}}

type Mutation {{
  inventorySetQuantities(input: InventorySetQuantitiesInput!): InventorySetQuantitiesPayload
  inventoryAdjustQuantities(input: InventoryAdjustQuantitiesInput!): InventoryAdjustQuantitiesPayload
  bulkOperationRunQuery(query: String!{group_objects_query}): BulkOperationRunQueryPayload
  bulkOperationRunMutation(mutation: String!, stagedUploadPath: String!, clientIdentifier: String{group_objects_mutation}): BulkOperationRunMutationPayload
  bulkOperationCancel(id: ID!): BulkOperationCancelPayload
  stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
{fulfillment.MUTATION_FIELDS}}}
{fulfillment.SDL}'''


@lru_cache(maxsize=16)
def _schema_for(key: tuple[bool, ...], version: str) -> GraphQLSchema:
    return build_schema(sdl(Features(version)))


def schema_for(version: str) -> tuple[GraphQLSchema, Features]:
    """The (cached) schema of ``version`` with its feature switches. The schema object
    is shared by versions with the same switches; resolvers are bound by the caller."""
    features = Features(version)
    return _schema_for(features.key(), version), features
